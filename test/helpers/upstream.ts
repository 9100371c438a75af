import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'

export interface RecordedRequest {
  method: string
  url: string
  headers: IncomingHttpHeaders
  body: string
}

export interface TestUpstream {
  port: number
  url: string
  server: Server
  /** Every request received, in order. */
  requests: RecordedRequest[]
  last(): RecordedRequest | undefined
  close(): Promise<void>
}

type Handler = (req: IncomingMessage, res: ServerResponse, recorded: RecordedRequest) => void

/** A JSON echo by default: answers `{method, url, headers, body}` of what it received. */
export const echo: Handler = (_req, res, recorded) => {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify(recorded))
}

/** A real HTTP server on 127.0.0.1 that records what it receives. */
export async function startUpstream(handler: Handler = echo, options: { recordBody?: boolean } = {}): Promise<TestUpstream> {
  const requests: RecordedRequest[] = []
  const server = createServer((req, res) => {
    const recorded: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: '' }
    requests.push(recorded)
    if (options.recordBody === false) return handler(req, res, recorded)
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      recorded.body = Buffer.concat(chunks).toString('utf8')
      handler(req, res, recorded)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    server,
    requests,
    last: () => requests[requests.length - 1],
    async close() {
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    },
  }
}
