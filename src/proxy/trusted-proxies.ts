import { BlockList, isIP } from 'node:net'

/** `server.trustProxy`: false, or the addresses / CIDR ranges of proxies whose X-Forwarded-* we keep. */
export function trustedProxies(list: false | readonly string[]): (address: string | undefined) => boolean {
  if (list === false || list.length === 0) return () => false
  const blocks = new BlockList()
  for (const entry of list) {
    const [address, bits] = entry.split('/') as [string, string | undefined]
    const type = isIP(address) === 6 ? 'ipv6' : 'ipv4'
    if (bits === undefined) blocks.addAddress(address, type)
    else blocks.addSubnet(address, Number(bits), type)
  }
  return (address) => {
    if (address === undefined) return false
    const plain = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address
    return blocks.check(plain, isIP(plain) === 6 ? 'ipv6' : 'ipv4')
  }
}
