/**
 * The Outpost browser client: ask the routers where to play ({@link Routers}), measure the
 * candidates ({@link probe}), and join ({@link connect}) over WebTransport or WebSocket.
 */
export * from "./codes.js";
export * from "./frames.js";
export * from "./router.js";
export * from "./probe.js";
export * from "./client.js";
export * from "./arena.js";
