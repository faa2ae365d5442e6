"""Key prefix shared by every part of the Redis layout."""

PREFIX = "saddle:"
