/**
 * The region router's public API as a page uses it: candidates to measure, routes (with the
 * page's own measurements), and probe reports. Every call goes to the routers in order and
 * fails over only when one cannot be reached, as the Rust client does.
 */

/** A node's WebTransport endpoint in routes and candidates. */
export interface WebTransportEndpoint {
  url: string;
  /** Lowercase hex SHA-256 of every certificate the node may present (none with a CA pair). */
  cert_sha256: string[];
  probe_url?: string;
}

/** A node's WebSocket endpoint. */
export interface WebSocketEndpoint {
  url: string;
  probe_url?: string;
}

/** A node as a route names it. */
export interface RouteNode {
  id: string;
  quic_addr: string;
  cert_sha256: string;
  region: string;
  probe_addr: string;
  websocket?: WebSocketEndpoint;
  webtransport?: WebTransportEndpoint;
}

/** `GET /v1/route`. */
export interface Route {
  node: RouteNode;
  alternates: RouteNode[];
  ticket: string;
  expires_at: string;
  player: number;
  estimate: { rtt_ms: number | null; method: string };
  client: { ip: string; country?: string | null; city?: string | null };
}

/** A node to measure, from `GET /v1/candidates`. */
export interface Candidate {
  node: string;
  region: string;
  probe_addr: string;
  websocket_probe?: string;
  webtransport?: WebTransportEndpoint;
  rtt_ms: number | null;
  method: string;
}

/** One measured path. */
export interface ProbeResult {
  node: string;
  rtt_ms: number;
  loss: number;
}

/** What to route for. */
export interface RouteQuery {
  module: string;
  name?: string;
  player?: number;
  auth?: string;
  room?: string;
}

/** The router's error body, and the status it came with. */
export class RouterError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function query(q: RouteQuery): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined) p.set(k, String(v));
  return p.toString();
}

/** Several routers of one fleet, tried in order. */
export class Routers {
  readonly urls: string[];

  constructor(
    urls: string | string[],
    private readonly fetchImpl: typeof fetch = (...a) => fetch(...a),
  ) {
    this.urls = (Array.isArray(urls) ? urls : urls.split(",")).map((u) => u.trim().replace(/\/+$/, "")).filter(Boolean);
    if (this.urls.length === 0) throw new Error("no router URL");
  }

  private async call<T>(path: string, init?: RequestInit): Promise<T> {
    let lastError: unknown;
    for (const base of this.urls) {
      let res: Response;
      try {
        res = await this.fetchImpl(base + path, init);
      } catch (e) {
        lastError = e; // unreachable: try the next router
        continue;
      }
      const text = await res.text();
      let body: any;
      try {
        body = text ? JSON.parse(text) : {};
      } catch {
        throw new RouterError(res.status, "bad-reply", `router answered ${res.status} with non-JSON`);
      }
      if (!res.ok) throw new RouterError(res.status, body.code ?? "error", body.error ?? `HTTP ${res.status}`);
      return body as T;
    }
    throw new RouterError(0, "unreachable", `no router could be reached: ${String(lastError)}`);
  }

  /** `GET /v1/route`: a node and a ticket, estimated by the router alone. */
  route(q: RouteQuery): Promise<Route> {
    return this.call(`/v1/route?${query(q)}`);
  }

  /** `POST /v1/route`: a route decided with the page's own measurements first. */
  routeMeasured(q: RouteQuery, results: ProbeResult[]): Promise<Route> {
    return this.call(`/v1/route?${query(q)}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ results }),
    });
  }

  /** `GET /v1/candidates`: the nodes worth measuring. */
  async candidates(module: string): Promise<Candidate[]> {
    const r = await this.call<{ candidates: Candidate[] }>(`/v1/candidates?${query({ module })}`);
    return r.candidates;
  }

  /** `POST /v1/probes`: reports measurements, as `outpost probe --report` does. */
  report(results: ProbeResult[]): Promise<{ accepted: number; unknown_nodes: number }> {
    return this.call("/v1/probes", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ results }),
    });
  }
}
