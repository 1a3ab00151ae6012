"""rollax.generative"""
