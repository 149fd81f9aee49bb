"""The Matrix side of the conference bridge: appservice, commands, rooms and calls."""
