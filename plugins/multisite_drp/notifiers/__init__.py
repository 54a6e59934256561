"""Notifiers: tell the operators when a campaign task fails."""
