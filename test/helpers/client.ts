import { request as undiciRequest } from 'undici'

export interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
  json: any
  /** Set-Cookie values of this reply. */
  setCookies: string[]
}

export interface RequestOptions {
  method?: string
  headers?: Record<string, string>
  body?: string | Buffer | object
}

/** One HTTP request with undici; JSON bodies are encoded, replies decoded. */
export async function send(url: string, options: RequestOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...options.headers }
  let body: string | Buffer | undefined
  if (options.body !== undefined) {
    if (typeof options.body === 'string' || Buffer.isBuffer(options.body)) body = options.body
    else {
      body = JSON.stringify(options.body)
      headers['content-type'] ??= 'application/json'
    }
  }
  const res = await undiciRequest(url, { method: (options.method ?? (body === undefined ? 'GET' : 'POST')) as 'GET', headers, body })
  const text = await res.body.text()
  let json: unknown
  try {
    json = text === '' ? undefined : JSON.parse(text)
  } catch {
    json = undefined
  }
  const raw = res.headers['set-cookie']
  const setCookies = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]
  return { status: res.statusCode, headers: res.headers, text, json, setCookies }
}

/** A browser-like client: keeps the cookies it is given and sends them back. */
export class CookieClient {
  readonly jar = new Map<string, string>()

  constructor(readonly base: string) {}

  cookieHeader(): string {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ')
  }

  absorb(setCookies: string[]): void {
    for (const line of setCookies) {
      const pair = line.split(';')[0] ?? ''
      const eq = pair.indexOf('=')
      const name = pair.slice(0, eq).trim()
      const value = pair.slice(eq + 1).trim()
      if (/max-age=0/i.test(line) || value === '') this.jar.delete(name)
      else this.jar.set(name, value)
    }
  }

  async send(path: string, options: RequestOptions = {}): Promise<Reply> {
    const headers = { ...options.headers }
    if (this.jar.size > 0) headers.cookie = this.cookieHeader()
    const reply = await send(this.base + path, { ...options, headers })
    this.absorb(reply.setCookies)
    return reply
  }

  login(username: string, password: string): Promise<Reply> {
    return this.send('/auth/login', { method: 'POST', body: { username, password } })
  }
}

export interface RawReply {
  status: number
  /** Lower-case names; a repeated header is an array. */
  headers: Record<string, string | string[]>
  body: Buffer
  text: string
  json: any
}

export interface RawRequestOptions {
  method?: string
  /** Sent exactly as given (no normalisation, no encoding). */
  path: string
  /** Pairs, in order, repeats allowed; `Host` and `Connection: close` are added unless given. */
  headers?: [string, string][]
  body?: string | Buffer
}

/**
 * One HTTP/1.1 request over a raw TCP socket, for request targets and headers that undici or fetch would
 * normalise or refuse (`/a/../b`, `Connection: x-foo`, `TE`, `Upgrade` ...). Reads until the server closes.
 */
export async function rawRequest(port: number, options: RawRequestOptions): Promise<RawReply> {
  const { connect } = await import('node:net')
  const headers = [...(options.headers ?? [])]
  const has = (name: string) => headers.some(([k]) => k.toLowerCase() === name)
  if (!has('host')) headers.unshift(['Host', `127.0.0.1:${port}`])
  if (!has('connection')) headers.push(['Connection', 'close'])
  const body = options.body === undefined ? undefined : Buffer.from(options.body)
  if (body && !has('content-length') && !has('transfer-encoding')) headers.push(['Content-Length', String(body.length)])
  const head = `${options.method ?? 'GET'} ${options.path} HTTP/1.1\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('end', () => resolve(Buffer.concat(chunks)))
    socket.on('error', (err) => (chunks.length > 0 ? resolve(Buffer.concat(chunks)) : reject(err)))
    socket.write(head)
    if (body) socket.write(body)
  })
  return parseRawReply(raw)
}

/** Parses one HTTP/1.1 response (Content-Length, chunked or read-to-close body). */
export function parseRawReply(raw: Buffer): RawReply {
  const end = raw.indexOf('\r\n\r\n')
  if (end === -1) throw new Error(`no complete response head in ${JSON.stringify(raw.toString('latin1').slice(0, 200))}`)
  const [statusLine, ...lines] = raw.subarray(0, end).toString('latin1').split('\r\n')
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '')?.[1])
  const headers: Record<string, string | string[]> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    const prior = headers[name]
    headers[name] = prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [prior, value]
  }
  let body = raw.subarray(end + 4)
  if (String(headers['transfer-encoding'] ?? '').toLowerCase() === 'chunked') {
    const parts: Buffer[] = []
    let at = 0
    for (;;) {
      const lineEnd = body.indexOf('\r\n', at)
      if (lineEnd === -1) break
      const size = parseInt(body.subarray(at, lineEnd).toString('latin1'), 16)
      if (!(size > 0)) break
      parts.push(body.subarray(lineEnd + 2, lineEnd + 2 + size))
      at = lineEnd + 2 + size + 2
    }
    body = Buffer.concat(parts)
  } else if (headers['content-length'] !== undefined) {
    body = body.subarray(0, Number(headers['content-length']))
  }
  const text = body.toString('utf8')
  let json: unknown
  try {
    json = text === '' ? undefined : JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status, headers, body, text, json }
}
