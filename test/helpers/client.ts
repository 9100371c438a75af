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
