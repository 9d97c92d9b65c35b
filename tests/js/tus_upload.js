// One tus upload with tus-js-client under Node, driven by tests/e2e/test_tus_js.py.
//
//   node tus_upload.js '{"endpoint": ..., "file": ..., "store": ..., ...}'
//
// Options (JSON, the one argument):
//   endpoint      the tus creation URL (vidproxy's /uploads)
//   file          the file to upload, read as an fs.ReadStream: tus-js-client
//                 fingerprints it by path, size and mtime, and re-opens it at any
//                 offset on a resume
//   store         a JSON file for tus-js-client's FileUrlStorage: a second run
//                 with the same file and store finds the upload and resumes it
//   chunkSize     bytes per PATCH (default: the whole rest of the file in one)
//   retryDelays   tus-js-client's own retries after a failed request, in ms
//                 (default []: a cut fails the run, and the next run resumes)
//   metadata      Upload-Metadata pairs (key, filetype, ...)
//   headers       extra request headers (Authorization)
//
// Prints one JSON line on stdout and exits 0 on success:
//   {"url", "resumedFrom", "videoKey", "sha256", "offsets"}
// or exits 1 with {"error", "url", "offsets"} (url: the upload it had created).
"use strict"

const fs = require("node:fs")
const tus = require("tus-js-client")

function parseOptions() {
  const options = JSON.parse(process.argv[2])
  for (const name of ["endpoint", "file", "store"]) {
    if (!options[name]) throw new Error(`missing option ${name}`)
  }
  return options
}

function report(result, code) {
  process.stdout.write(JSON.stringify(result) + "\n")
  process.exitCode = code
}

async function main() {
  const options = parseOptions()
  const offsets = [] // the Upload-Offset of each PATCH and HEAD answer, in order
  let videoKey = null
  let sha256 = null
  let resumedFrom = null
  const upload = new tus.Upload(fs.createReadStream(options.file), {
    endpoint: options.endpoint,
    chunkSize: options.chunkSize || Infinity,
    retryDelays: options.retryDelays || [],
    metadata: options.metadata || {},
    headers: options.headers || {},
    urlStorage: new tus.FileUrlStorage(options.store),
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: true,
    onAfterResponse(req, res) {
      const offset = res.getHeader("Upload-Offset")
      if (offset !== undefined && offset !== null && offset !== "") {
        offsets.push([req.getMethod(), Number(offset)])
        if (req.getMethod() === "HEAD" && resumedFrom === null) resumedFrom = Number(offset)
      }
      videoKey = res.getHeader("X-Video-Key") || videoKey
      sha256 = res.getHeader("X-Content-SHA256") || sha256
    },
  })
  const previous = await upload.findPreviousUploads()
  if (previous.length > 0) upload.resumeFromPreviousUpload(previous[0])
  await new Promise((resolve) => {
    upload.options.onSuccess = () => {
      report({ url: upload.url, resumedFrom, videoKey, sha256, offsets }, 0)
      resolve()
    }
    upload.options.onError = (error) => {
      report({ error: String(error), url: upload.url, offsets }, 1)
      resolve()
    }
    upload.start()
  })
}

main().catch((error) => {
  report({ error: String(error && error.stack ? error.stack : error) }, 2)
})
