"""The reviewers' web application."""
