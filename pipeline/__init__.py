"""avel.pipeline"""
