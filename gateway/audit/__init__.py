"""gateway.audit"""
