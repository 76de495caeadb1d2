"""gateway.policy"""
