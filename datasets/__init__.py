"""avel.datasets"""
