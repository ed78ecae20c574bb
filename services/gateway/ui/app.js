// padlock UI
