// Typeset LaTeX formulas with KaTeX, for the report builder (report/mathtext.py).
// Usage: node katex_render.js <path of the katex package>
// stdin: JSON [[latex, display], ...]; stdout: JSON [html or {"error": message}, ...].
const katex = require(process.argv[2]);

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const typeset = JSON.parse(input).map(([latex, display]) => {
    try {
      return katex.renderToString(latex, { displayMode: display, throwOnError: true });
    } catch (error) {
      return { error: error.message };
    }
  });
  process.stdout.write(JSON.stringify(typeset));
});
