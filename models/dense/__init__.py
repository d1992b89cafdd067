"""Dense (UnAV-100-style) audio-visual event detectors."""
