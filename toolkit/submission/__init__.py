"""Building, checking and validating submission zips."""
