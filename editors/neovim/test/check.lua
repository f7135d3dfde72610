-- Drives Neovim's own LSP client against `journeyc lsp` through
-- editors/neovim/journey.lua: diagnostics with their code, hover, and
-- formatting. Run by editors/neovim/test/run.sh; exits non-zero on failure.

local function fail(message)
  io.stderr:write("neovim check: " .. message .. "\n")
  vim.cmd("cquit 1")
end

local broken = os.getenv("JOURNEY_BROKEN")
local messy = os.getenv("JOURNEY_MESSY")
local formatted = os.getenv("JOURNEY_FORMATTED")

vim.cmd("filetype on")
dofile(os.getenv("JOURNEY_CONFIG"))

-- 1. Diagnostics: the unknown event is reported with its code.
vim.cmd("edit " .. vim.fn.fnameescape(broken))
if vim.bo.filetype ~= "journey" then
  fail("the file type is " .. vim.inspect(vim.bo.filetype))
end
local found = vim.wait(20000, function()
  return #vim.diagnostic.get(0) > 0
end, 50)
if not found then
  fail("no diagnostics within 20 s")
end
local codes = {}
for _, d in ipairs(vim.diagnostic.get(0)) do
  local code = d.code or (d.user_data and d.user_data.lsp and d.user_data.lsp.code)
  table.insert(codes, tostring(code) .. " " .. d.message:gsub("\n.*", ""))
end
io.stdout:write("diagnostics: " .. table.concat(codes, "; ") .. "\n")
if not table.concat(codes, "\n"):find("E0106", 1, true) then
  fail("expected E0106 (unknown event), got " .. vim.inspect(codes))
end

-- 2. Hover on the duration `1d12h`.
local line = vim.fn.search("1d12h")
local column = vim.fn.col(".")
local responses = vim.lsp.buf_request_sync(0, "textDocument/hover", {
  textDocument = { uri = vim.uri_from_bufnr(0) },
  position = { line = line - 1, character = column },
}, 10000)
local hover = ""
for _, response in pairs(responses or {}) do
  if response.result and response.result.contents then
    hover = hover .. vim.inspect(response.result.contents)
  end
end
io.stdout:write("hover: " .. hover:gsub("\n", " ") .. "\n")
if not hover:find("36 hours", 1, true) then
  fail("expected the hover to say 36 hours, got " .. hover)
end

-- 3. Formatting gives what `journeyc fmt` writes.
vim.cmd("edit " .. vim.fn.fnameescape(messy))
vim.wait(20000, function()
  return #vim.lsp.buf_get_clients(0) > 0 and vim.lsp.buf_get_clients(0)[1].initialized ~= false
end, 50)
if vim.lsp.buf.format then
  vim.lsp.buf.format({ async = false, timeout_ms = 10000 })
else
  vim.lsp.buf.formatting_sync(nil, 10000)
end
local text = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n") .. "\n"
local expected = table.concat(vim.fn.readfile(formatted), "\n") .. "\n"
if text ~= expected then
  fail("formatting gave:\n" .. text .. "\nexpected:\n" .. expected)
end
io.stdout:write("formatting: as journeyc fmt\n")
vim.cmd("qall!")
