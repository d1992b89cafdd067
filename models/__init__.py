"""avel.models"""
