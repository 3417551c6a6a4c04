# Stages the client packages for tests and packaging: copies SRC/python and
# SRC/node to DST, and puts this build's function library into each, where
# the package reads it at run time:
#
#   DST/python/sluice/library.lua, library.version
#   DST/node/library.lua, library.version
#
# LIB_DIR holds library.lua and library.version (cmake/embed_lua.cmake).
# The library files exist only in the staged copies, never in the source
# tree. A package is built from the staged copy (clients/*/README.md).
foreach(client python node)
  file(REMOVE_RECURSE ${DST}/${client})
  file(COPY ${SRC}/${client} DESTINATION ${DST}
       PATTERN node_modules EXCLUDE PATTERN __pycache__ EXCLUDE PATTERN dist EXCLUDE)
endforeach()
foreach(f library.lua library.version)
  file(COPY ${LIB_DIR}/${f} DESTINATION ${DST}/python/sluice)
  file(COPY ${LIB_DIR}/${f} DESTINATION ${DST}/node)
endforeach()
file(TOUCH ${DST}/.staged)
