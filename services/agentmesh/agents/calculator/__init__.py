"""Calculator agent: safe arithmetic over a whitelisted expression grammar."""
