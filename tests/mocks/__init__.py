"""Protocol-faithful mock servers of the speech providers, built from reference/providers.md."""
