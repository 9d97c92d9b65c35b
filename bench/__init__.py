"""The vidproxy benchmark (issue 6): ``python -m bench`` (or ``--smoke`` in CI).

It builds its own set-up on loopback (``rclone serve s3`` as the S3 backend,
vidproxy as its console script, nginx as the caching-proxy peer and the
sendfile ceiling, boto3 as the direct baseline), measures each figure against
its baseline in the same run, and writes a markdown table, JSON and a PNG
chart under ``bench/results/``. See ``services.py`` for the set-up and
``figures.py`` for the figures and their targets.
"""
