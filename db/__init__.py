"""The asset database: models, the asset state machine, sessions and migrations."""
