"""The domain world (stage 1, `describe` and `prepare`): MovieLens, the movies' text and the
users' profiles; the ALS latent space Z, the text encoder E_D and the utility on Z."""
