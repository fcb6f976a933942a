// The relay embeds the output (relay/build.rs passes --outDir under OUT_DIR).
// One JS and one CSS file, no external URLs, nothing inlined as data: URLs
// (the relay's Content-Security-Policy allows only 'self').
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    target: "es2022",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
    chunkSizeWarningLimit: 200,
  },
});
