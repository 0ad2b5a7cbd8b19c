// Where Guix keeps its store and its daemon's socket (guix-daemon's defaults), for every layer
// that needs to name them: probes measure the store, clients connect to the socket.
export const GUIX_STORE_DIR = "/gnu/store";
export const DEFAULT_GUIX_SOCKET = "/var/guix/daemon-socket/socket";
