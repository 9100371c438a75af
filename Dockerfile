# sessiongate: build the TypeScript, keep production dependencies only, run as the unprivileged node user.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY bin ./bin
COPY src ./src
RUN npm ci --no-audit --no-fund && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY config ./config
COPY examples ./examples
USER node
EXPOSE 8080
ENTRYPOINT ["node", "bin/sessiongate.js"]
CMD ["--config", "config/production.yaml"]
