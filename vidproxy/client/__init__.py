"""vidproxy's command-line client: upload, download, ls and rm.

    vidproxy upload FILE... [--key K | --prefix P] [-r] [--content-type T] [-q]
    vidproxy download KEY [-o FILE|-] [-c] [-q]
    vidproxy ls [PREFIX] [--json]
    vidproxy rm KEY...

Every command takes --url (default $VIDPROXY_URL, else http://127.0.0.1:8080;
a path is kept as a prefix, for a vidproxy behind a reverse proxy) and --token
(default $VIDPROXY_TOKEN, sent as "Authorization: Bearer"). upload and download
draw a progress bar on stderr when it is a terminal; -q turns it off.

- upload streams each FILE from disk with its Content-Length ("-" streams stdin
  chunked) and prints each stored key on stdout, one per line. A file's key is
  --prefix + its name; with -r a directory's files are keyed --prefix + their
  path inside it (as "aws s3 cp --recursive"); stdin without --key gets a key
  chosen by the server (POST /videos).
- download writes KEY to FILE (default: the key's last segment; "-" is stdout).
  A download that was cut off resumes where it stopped, with Range and If-Range;
  -c resumes any existing FILE. The bytes are checked against the server's
  X-Content-SHA256. A reader that closes stdout early (| head) ends it, exit 0.
- ls prints KEY<TAB>SIZE<TAB>CONTENT-TYPE per object, following pages; --json
  prints a JSON array of the objects, one per line, as rclone lsjson does.
- rm deletes; deleting a key that does not exist succeeds.

Exit codes, for scripts:

    0  success
    1  the server answered with an error (its JSON code and message go to
       stderr), a local file could not be read or written, or the downloaded
       bytes did not match their checksum
    2  usage error: bad arguments, or a FILE to upload that does not exist
    3  not found: the server answered 404
    4  connection error: refused, unreachable, timed out, or cut off mid-transfer
    130  interrupted (Ctrl-C)
"""

from .commands import (
    CLIENT_COMMANDS,
    CLIENT_ENV_VARS,
    add_client_commands,
    build_parser,
    run_client,
)

__all__ = [
    "CLIENT_COMMANDS",
    "CLIENT_ENV_VARS",
    "add_client_commands",
    "build_parser",
    "run_client",
]
