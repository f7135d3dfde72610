-- journeyc in Neovim with no plugins (Neovim 0.7 and later): the file type,
-- comments, and `journeyc lsp`, started once per workspace (the nearest
-- directory above the file that holds `.git`, else the file's directory).
--
-- Use: `dofile("/path/to/journeyc/editors/neovim/journey.lua")` in init.lua,
-- or copy this file to ~/.config/nvim/plugin/journey.lua.
-- `vim.g.journeyc_path` names the binary (default: `journeyc` on PATH).

vim.api.nvim_create_autocmd({ "BufRead", "BufNewFile" }, {
  pattern = "*.journey",
  command = "setfiletype journey",
})

local clients = {}

local function workspace_of(path)
  local dir = vim.fn.fnamemodify(path, ":p:h")
  local here = dir
  while true do
    if vim.loop.fs_stat(here .. "/.git") then
      return here
    end
    local parent = vim.fn.fnamemodify(here, ":h")
    if parent == here then
      return dir
    end
    here = parent
  end
end

vim.api.nvim_create_autocmd("FileType", {
  pattern = "journey",
  callback = function(args)
    vim.bo[args.buf].commentstring = "// %s"
    vim.bo[args.buf].shiftwidth = 2
    vim.bo[args.buf].expandtab = true
    local root = workspace_of(vim.api.nvim_buf_get_name(args.buf))
    local id = clients[root]
    if not (id and vim.lsp.get_client_by_id(id)) then
      id = vim.lsp.start_client({
        name = "journeyc",
        cmd = { vim.g.journeyc_path or "journeyc", "lsp" },
        root_dir = root,
        workspace_folders = { { uri = vim.uri_from_fname(root), name = root } },
      })
      clients[root] = id
    end
    if id then
      vim.lsp.buf_attach_client(args.buf, id)
    end
  end,
})
