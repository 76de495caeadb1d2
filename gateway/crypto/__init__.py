"""gateway.crypto"""
