"""rollax.rollout"""
