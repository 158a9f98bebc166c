"""Quality control: lip-sync scoring, technical and visual checks, the gate policy and review sampling.

Entry point: `qc.checks.check_video(video, ...) -> qc.record.VideoChecks`, one pass over the
video for every check; `VideoChecks.to_record()` / `from_record()` is what the database keeps.

Modules, each importing only those above it:
    decode       one ffmpeg pass: the 25 fps picture, the soundtrack renditions; probing
    result       LipSyncResult, SyncWindow, the scorer interface (numpy only)
    verdicts     CheckResult and how verdicts combine (no media imports)
    record       VideoChecks and its stored record (no media imports)
    facetrack    the face-mesh track (landmarks per frame) and the mouth read from it
    speech       speech-band energies, MFCCs, soundtrack shifts
    sync_search  the audio-video offset search, analysis windows, per-window correlations
    mouth_model  the mouth the speech predicts (the landmark scorer's fitted linear map)
    calibration  raw metrics -> P(in sync): fitting, storing, and the Calibrator both scorers use
    scan         the one pass: decode once, track the face once, feed every measurement
    identity     face features for the identity and colour checks; the reference portrait
    picture      per-frame picture statistics and face samples for the technical checks
    landmark     the default lip-sync scorer (landmark-v2)
    syncnet      the SyncNet scorer (optional weights and torch)
    lipsync      which scorer runs (default_scorer, thread_scorer), and the public lip-sync names
    visual       the visual checks: mouth region, mouth motion, flicker, jitter, blinks
    technical    Thresholds and the technical checks (run_checks on their own)
    checks       check_video: the lip-sync score and the technical checks from one pass
    gate         pass / borderline / fail, and the route that follows
    sampling     the deterministic review sample of passed videos
    stage        the QC and route stages against the database
    defects      broken copies of real clips, each naming the check that must catch it
"""
