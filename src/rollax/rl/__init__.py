"""rollax.rl"""
