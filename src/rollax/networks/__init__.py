"""rollax.networks"""
