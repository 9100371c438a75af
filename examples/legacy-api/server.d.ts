// Types for server.js (plain JavaScript, run by `npm start`), for the TypeScript tests that import it.
import type { Server } from 'node:http'

/** The demo's legacy JSON API, not yet listening. */
export declare function createLegacyApi(): Server
