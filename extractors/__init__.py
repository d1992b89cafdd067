"""avel.extractors"""
