"""Every flag, the dataset presets, how they are resolved, and how a trained run folder's config.json is read
back."""
