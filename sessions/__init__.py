"""Many conversations: a session manager, admission control, placement on this machine or Ray."""
