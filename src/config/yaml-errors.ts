/**
 * A YAML parser error as one line: the `yaml` package's message ends its first line with ` at line L, column C:`
 * and a code excerpt on the lines after; the position is kept, in brackets, and the excerpt dropped.
 */
export function yamlErrorReason(err: Error): string {
  const first = err.message.split('\n')[0] ?? ''
  return first.replace(/ at line (\d+), column (\d+):?$/, ' (line $1, column $2)')
}
