"""Guest links: people without a Matrix account join a room's call as ghosts of the bridge."""
