#!/usr/bin/env python3
"""Records real client traffic as seeds for the `session` fuzz target.

record.py LISTEN_PORT BROKER_PORT OUT_DIR [CONNECTIONS]: accepts CONNECTIONS (default 1000)
connections on 127.0.0.1:LISTEN_PORT, relays each to the broker on BROKER_PORT, and writes what
the client sent, as one file per connection, into OUT_DIR. Stops after CONNECTIONS or when
idle for 30 s. Run a client (pika, ringmq-perf, ...) against LISTEN_PORT meanwhile.
"""
import os
import selectors
import socket
import sys
import threading

IDLE_TIMEOUT_SECONDS = 30
SEED_BYTES_MAX = 64 * 1024  # libFuzzer's -max_len for this target is smaller still


def relay(client, broker_port, out_path):
    broker = socket.create_connection(("127.0.0.1", broker_port), timeout=10)
    sel = selectors.DefaultSelector()
    sel.register(client, selectors.EVENT_READ, broker)
    sel.register(broker, selectors.EVENT_READ, client)
    sent = bytearray()
    open_ends = 2
    while open_ends:
        events = sel.select(timeout=IDLE_TIMEOUT_SECONDS)
        if not events:
            break
        for key, _ in events:
            data = key.fileobj.recv(65536)
            if not data:
                sel.unregister(key.fileobj)
                open_ends -= 1
                try:
                    key.data.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                continue
            if key.fileobj is client:
                sent.extend(data)
            key.data.sendall(data)
    client.close()
    broker.close()
    with open(out_path, "wb") as f:
        f.write(bytes(sent[:SEED_BYTES_MAX]))


def main():
    listen_port, broker_port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    connections = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    os.makedirs(out_dir, exist_ok=True)
    server = socket.create_server(("127.0.0.1", listen_port))
    server.settimeout(IDLE_TIMEOUT_SECONDS)
    threads = []
    for n in range(connections):
        try:
            client, _ = server.accept()
        except socket.timeout:
            break
        path = os.path.join(out_dir, f"conn-{os.getpid()}-{n:04d}")
        thread = threading.Thread(target=relay, args=(client, broker_port, path))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
