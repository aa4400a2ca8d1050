// Preloaded into every Node process of a template image (NODE_OPTIONS=--require …): Node 18's
// `fetch` and `https` ignore HTTPS_PROXY, and in a bottle the proxy is the only way out. This
// routes both through $HTTPS_PROXY, except for hosts in $NO_PROXY (the bundle's own address).
// `fetch` gets a dispatcher built on Debian's undici (ProxyAgent); `https` an agent that opens a
// CONNECT tunnel. Programs with their own proxy handling (npm, the CLIs) are unaffected: they
// pass their own agents. Without HTTPS_PROXY this does nothing.
'use strict';

const proxyUrl = process.env.HTTPS_PROXY || process.env.https_proxy;
if (proxyUrl) {
  const noProxy = (process.env.NO_PROXY || process.env.no_proxy || '')
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter(Boolean);
  const bypass = (host) => {
    const h = String(host || '').toLowerCase().replace(/^\[|\]$/g, '');
    return noProxy.some((n) => n === '*' || h === n || h.endsWith('.' + n.replace(/^\./, '')));
  };

  // fetch (undici's global dispatcher).
  try {
    const undici = require('undici');
    const proxied = new undici.ProxyAgent(proxyUrl);
    const direct = new undici.Agent();
    class Bottle extends undici.Dispatcher {
      dispatch(opts, handler) {
        const host = new URL(String(opts.origin)).hostname;
        return (bypass(host) ? direct : proxied).dispatch(opts, handler);
      }
      close(...a) {
        return Promise.all([proxied.close(), direct.close()]).then(() => a.find((f) => typeof f === 'function')?.());
      }
      destroy(...a) {
        return Promise.all([proxied.destroy(), direct.destroy()]).then(() => a.find((f) => typeof f === 'function')?.());
      }
    }
    undici.setGlobalDispatcher(new Bottle());
  } catch (_) {
    // No undici here: fetch stays as it is.
  }

  // https.request / https.get without an agent of their own.
  const http = require('http');
  const https = require('https');
  const tls = require('tls');
  const proxy = new URL(proxyUrl);
  class TunnelAgent extends https.Agent {
    createConnection(options, done) {
      const host = options.host || options.hostname;
      const port = options.port || 443;
      if (bypass(host)) {
        return tls.connect({ ...options, servername: options.servername || host });
      }
      const target = `${host.includes(':') ? `[${host}]` : host}:${port}`;
      const req = http.request({
        host: proxy.hostname,
        port: proxy.port || 80,
        method: 'CONNECT',
        path: target,
        headers: { host: target },
      });
      req.once('connect', (res, socket) => {
        if (res.statusCode !== 200) {
          socket.destroy();
          done(new Error(`proxy refused CONNECT ${target}: ${res.statusCode}`));
          return;
        }
        done(null, tls.connect({ ...options, socket, servername: options.servername || host }));
      });
      req.once('error', done);
      req.end();
      return undefined;
    }
  }
  https.globalAgent = new TunnelAgent({ keepAlive: false });
}
