"""gateway.bench"""
