"""Integrations with engines that run mmemo at scale (optional extras): ``mmemo.integrations.ray`` scores large
collections with Ray Data (``pip install mmemo[ray]``)."""
