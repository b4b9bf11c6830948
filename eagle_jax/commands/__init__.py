"""CLI glue for each EAGLE stage: config in, progress bars and artefacts out."""
