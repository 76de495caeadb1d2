"""gateway.classify"""
