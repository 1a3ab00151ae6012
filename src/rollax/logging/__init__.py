"""rollax.logging"""
