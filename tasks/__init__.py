"""Plain functions for each CPU stage (intake, preprocessing, transcoding, delivery) and their Prefect task wrappers."""
