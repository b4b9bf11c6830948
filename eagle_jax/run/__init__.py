"""Run I/O: the run folder (artefact names and fingerprints), atomic artefact writes, Orbax
checkpoints, metric logs and the report."""
