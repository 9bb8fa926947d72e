"""Training-data handling: loading and writing npz files, hashing, cleaning, splitting, demo data."""
