"""The avel command line."""
