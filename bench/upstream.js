// The benchmark's upstream: node:http answering ~100 bytes of JSON.
import { createServer } from 'node:http'

const body = JSON.stringify({ ok: true, service: 'legacy-api', items: [1, 2, 3], note: 'a one-hundred-byte JSON reply!!' })
// Asked by `x-bench-echo` (s3's wrk client, and its bare control), the forwarded Authorization comes back in
// `x-bench-authorization`: that is how the client learns a rotated access token (wrk keeps only the last of repeated
// Set-Cookie lines, the refresh cookie). Other requests get nothing extra.
const length = Buffer.byteLength(body)
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    const auth = req.headers['x-bench-echo'] === undefined ? undefined : (req.headers.authorization ?? '')
    if (auth === undefined) res.writeHead(200, { 'content-type': 'application/json', 'content-length': length })
    else res.writeHead(200, { 'content-type': 'application/json', 'content-length': length, 'x-bench-authorization': auth })
    res.end(body)
  })
})
server.keepAliveTimeout = 60_000
server.listen(Number(process.argv[2]), '127.0.0.1', () => process.send?.('ready'))
