"""gateway.server"""
